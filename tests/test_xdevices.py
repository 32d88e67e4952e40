"""What the X hooks make of the device that typed a key (agent.sources.xdevices); the real
thing on Xvfb is in test_xrecord.py."""

from __future__ import annotations

from agent.sources.xdevices import ALLOWED, HAND, SOFTWARE, KeyOrigins, allowed


def test_allowlist_patterns_are_shell_style_in_any_case():
    patterns = ("Yubico YubiKey*", "*barcode*", "Honeywell Imaging & Mobility 1900")
    assert allowed("Yubico YubiKey OTP+FIDO+CCID", patterns)
    assert allowed("yubico yubikey otp", patterns)
    assert allowed("Symbol Technologies BARCODE Scanner", patterns)
    assert allowed("Honeywell Imaging & Mobility 1900", patterns)
    assert not allowed("Honeywell Imaging & Mobility 1900 Keyboard", patterns)
    assert not allowed("AT Translated Set 2 keyboard", patterns)
    assert not allowed("Yubico YubiKey", ())


def test_each_device_is_asked_about_once_until_its_id_is_reused():
    asked: list[int] = []
    devices = {8: ("AT Translated Set 2 keyboard", False),
               5: ("Virtual core XTEST keyboard", True),
               12: ("Yubico YubiKey OTP+FIDO+CCID", False),
               13: ("Yubico YubiKey XTEST", True)}   # allowed wins: the policy named it

    def describe(device):
        asked.append(device)
        return devices.get(device)

    origins = KeyOrigins(describe, allow=("yubico*",))
    assert [origins.origin(d) for d in (8, 5, 12, 13, 8, 5)] == \
        [HAND, SOFTWARE, ALLOWED, ALLOWED, HAND, SOFTWARE]
    assert asked == [8, 5, 12, 13]
    assert origins.origin(40) == HAND and origins.origin(40) == HAND  # gone: asked each time
    assert asked[-2:] == [40, 40]
    assert origins.first_key(8) and not origins.first_key(8)
    devices[8] = ("Ducky Keyboard", False)      # unplugged, and its id given to an injector
    origins.forget(8)
    assert origins.origin(8) == HAND and asked[-1] == 8
    assert origins.first_key(8)                  # it has never typed here
