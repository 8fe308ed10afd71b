"""Reading datasets on storage: which files, how big, their checksum, format and first records.

Pure functions of paths (no Django): ``scan`` walks and hashes, ``preview`` reads the
first records of one file, ``confinement`` says which paths a dataset may reach.
"""
