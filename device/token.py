"""The officer's PKCS#11 token (a USB signing token, or SoftHSM2 in tests): one login
session, and every way it can fail told in one line with what to do.

python-pkcs11 loads the token's driver (``module``); the session it returns is handed
to pyHanko, which signs through it. The PIN is used once, for the login, and is
never stored, logged or shown.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pkcs11
import pkcs11.exceptions as p11

from device.errors import DeviceError


class TokenError(DeviceError):
    """The signing token is absent, locked or refused the PIN."""


def tries_left(flags: int) -> str:
    """What the token says about the PIN tries left, in words ("" when it says nothing).
    PKCS#11 does not give the number; the flags tell "few" and "one"."""
    if flags & pkcs11.TokenFlag.USER_PIN_LOCKED:
        return "không còn lần thử nào / no tries left"
    if flags & pkcs11.TokenFlag.USER_PIN_FINAL_TRY:
        return "còn 1 lần thử / 1 try left"
    if flags & pkcs11.TokenFlag.USER_PIN_COUNT_LOW:
        return "còn ít lần thử / few tries left"
    return ""


def _library(module: str) -> Any:
    if not module:
        raise TokenError(
            "chưa cấu hình token ký số / no signing token configured ([sign] module is empty)",
            "set [sign] module, token and key to the token's PKCS#11 driver and labels",
        )
    if not Path(module).is_file():
        raise TokenError(
            f"không tìm thấy trình điều khiển token / PKCS#11 module {module} not found",
            "install the token's driver or correct [sign] module",
        )
    try:
        return pkcs11.lib(module)
    except p11.PKCS11Error as exc:
        raise TokenError(
            f"không nạp được trình điều khiển token / PKCS#11 module {module}"
            f" cannot be loaded ({exc})",
            "install the token driver built for this machine, or correct [sign] module",
        ) from None


def _token(lib: Any, label: str) -> Any:
    try:
        return lib.get_token(token_label=label)
    except (p11.NoSuchToken, p11.TokenNotPresent, p11.DeviceRemoved):
        raise TokenError(
            f"không thấy token ký số / signing token {label!r} is not plugged in",
            "cắm token của cán bộ vào thiết bị rồi thử lại / plug in the officer's token"
            " and try again (or correct [sign] token)",
        ) from None


def token_state(module: str, label: str) -> str:
    """What the token says without a PIN (for ``sohoa doctor``): present, and the PIN's
    state; ``TokenError`` when the driver or the token is absent or the PIN is locked."""
    token = _token(_library(module), label)
    flags = int(token.flags)
    if flags & pkcs11.TokenFlag.USER_PIN_LOCKED:
        raise _locked("too many wrong PINs")
    left = tries_left(flags)
    maker = str(getattr(token, "manufacturer_id", "") or "").strip()
    return (
        f"{label!r} plugged in" + (f" ({maker})" if maker else "") + (f"; {left}" if left else "")
    )


def _locked(what: str) -> TokenError:
    return TokenError(
        f"token ký số bị khóa / the signing token is locked ({what})",
        "nhờ quản trị viên mở khóa bằng SO PIN / ask the agency's administrator to unlock"
        " it with the SO PIN",
    )


def open_session(module: str, label: str, pin: str) -> Any:
    """A logged-in session on the token ``label`` through the driver ``module``;
    ``TokenError`` naming the cause (driver, token absent, locked, wrong PIN with the
    tries left) otherwise."""
    token = _token(_library(module), label)
    if token.flags & pkcs11.TokenFlag.USER_PIN_LOCKED:
        raise _locked("too many wrong PINs")
    try:
        return token.open(user_pin=pin)
    except p11.PinLocked:
        raise _locked("too many wrong PINs") from None
    except (p11.PinIncorrect, p11.PinLenRange):
        left = tries_left(_token(_library(module), label).flags)
        raise TokenError(
            "sai mã PIN của token / wrong PIN for the signing token"
            + (f" ({left})" if left else ""),
            "nhập lại đúng mã PIN; nhập sai nhiều lần token sẽ bị khóa / enter the right"
            " PIN; too many wrong ones lock the token",
        ) from None
    except (p11.TokenNotPresent, p11.DeviceRemoved):
        raise _token_gone(label) from None


def _token_gone(label: str) -> TokenError:
    return TokenError(
        f"token ký số đã bị rút ra / signing token {label!r} was removed",
        "cắm lại token rồi quét lại / plug the token back in and scan again",
    )


def on_token(label: str, step: Callable[[], Any]) -> Any:
    """Run ``step`` (a signing operation) and turn a token pulled out mid-way, or a
    token error, into a ``TokenError``."""
    try:
        return step()
    except (p11.TokenNotPresent, p11.DeviceRemoved, p11.SessionClosed):
        raise _token_gone(label) from None
    except p11.PKCS11Error as exc:
        if type(exc) is p11.PKCS11Error:  # the plain class: a look-up found no such object
            raise TokenError(
                f"không tìm thấy khóa hoặc chứng thư số trên token / {exc}",
                "check [sign] key (the key's label: pkcs11-tool -O) and [sign] certificate",
            ) from None
        raise TokenError(
            f"token ký số báo lỗi / the signing token failed ({type(exc).__name__})",
            "rút token ra, cắm lại rồi thử lại / unplug the token, plug it back in, try again",
        ) from None
