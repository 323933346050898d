"""The sign-in page's words, shared by the counter page and the fleet page."""

from __future__ import annotations

SIGN_IN: dict[str, dict[str, str]] = {
    "sign_in": {"vi": "Đăng nhập", "en": "Sign in"},
    "sign_out": {"vi": "Đăng xuất", "en": "Sign out"},
    "name": {"vi": "Tên đăng nhập", "en": "Name"},
    "password": {"vi": "Mật khẩu", "en": "Password"},
    "wrong_password": {"vi": "Sai tên hoặc mật khẩu", "en": "Wrong name or password"},
    "locked": {
        "vi": "Nhập sai quá nhiều lần, hãy thử lại sau",
        "en": "Too many wrong passwords; try again later",
    },
    "switch": {"vi": "English", "en": "Tiếng Việt"},
}
