from django.urls import path

from apps.accounts import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("account/password/", views.password_change_view, name="password_change"),
    path("workspaces/", views.workspace_list, name="workspace_list"),
    path("workspaces/<int:workspace_id>/", views.workspace_detail, name="workspace_detail"),
    path("workspaces/<int:workspace_id>/members/", views.member_add, name="member_add"),
    path(
        "workspaces/<int:workspace_id>/members/<int:user_id>/role/",
        views.member_role,
        name="member_role",
    ),
    path(
        "workspaces/<int:workspace_id>/members/<int:user_id>/remove/",
        views.member_remove,
        name="member_remove",
    ),
    path("tokens/", views.token_list, name="token_list"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
    path("users/", views.user_list, name="user_list"),
    path("users/<int:user_id>/", views.user_update, name="user_update"),
]
