"""Pages: the queue of every pool, jobs (list, submit, detail with live output), pools with
their usage, quotas and nodes, and the scheduling block of a node's page.

Views parse a form, call a selector or service, and render the page or, for htmx, the
named partial of the same template. A service's ApplicationError becomes a form error
or a message; refusals reach the 403/404 pages.
"""
