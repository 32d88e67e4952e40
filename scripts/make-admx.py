#!/usr/bin/env python3
"""Write installers/windows/cadence.admx and en-US/cadence.adml from agent.policy.Policy.

Every Policy field becomes one policy under HKLM/HKCU\\SOFTWARE\\Policies\\Cadence\\Agent, the
value name equal to the key, in the type agent.policy reads: booleans as DWORD 1/0, numbers as
DWORD (sensitivity, a fraction, as a string), choices as strings, the locker command and the
allowed keyboards as REG_MULTI_SZ, the SIEM sinks as a JSON string. A new Policy field without
an entry in TEXT below is an error: describe it here, run this script, commit both files
(tests/test_installers.py checks they are current).

    python scripts/make-admx.py [--check]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import __version__, policy  # noqa: E402

KEY = policy.WINDOWS_KEY
ADMX = ROOT / "installers" / "windows" / "cadence.admx"
ADML = ROOT / "installers" / "windows" / "en-US" / "cadence.adml"

# key: (display name, explanation, element label)
TEXT = {
    "action": ("Action on an impostor verdict",
               "What Cadence does when it decides that someone other than the enrolled user is "
               "typing: observe (write the audit log only), alert (notify the user) or lock "
               "(lock the session). Default: lock.", "Action"),
    "sensitivity": ("Sensitivity",
                    "How quickly Cadence acts on typing that does not match the user, from 0.5 "
                    "(fewer, later alerts) to 2.0 (faster locks). A decimal number written as "
                    "text, for example 1.0 or 1.5. Default: 1.0.", "Sensitivity (0.5 - 2.0)"),
    "enrol_keystrokes": ("Keystrokes to learn from before protecting",
                         "How much typing Cadence learns from (and checks for quality) before it "
                         "starts protecting, 200 - 20000 keystrokes. Default: 1000.",
                         "Keystrokes"),
    "allow_pause": ("Allow users to pause protection",
                    "Enabled: the tray menu offers Pause protection. Disabled: users cannot "
                    "pause. Default: allowed.", None),
    "pause_minutes": ("Length of a pause",
                      "How long a pause lasts before protection resumes, 1 - 480 minutes. "
                      "Default: 15.", "Minutes"),
    "allow_quit": ("Allow users to quit Cadence",
                   "Enabled: the tray menu offers Quit. Disabled: users cannot quit the agent "
                   "from the tray. Default: allowed.", None),
    "locker_command": ("Screen locker command (Linux)",
                       "The screen locker Cadence runs on Linux when the session cannot be "
                       "locked otherwise, one argument per line, e.g. i3lock and -n. Windows "
                       "always locks with LockWorkStation, so this setting has no effect on "
                       "Windows; it is listed so every Cadence setting has a policy.",
                       "Command and arguments, one per line"),
    "injection_action": ("Action on keystroke injection",
                         "What Cadence does when keystrokes arrive faster and more regularly than "
                         "a person types (a USB keystroke injector): observe, alert or lock. "
                         "Default: lock.", "Action"),
    "injection_allow_software": ("Accept input injected by software",
                                 "Enabled: input that Windows flags as injected by software "
                                 "(remote desktop, password-manager auto-type, automation tools) "
                                 "is accepted. Disabled: it is treated as keystroke injection. "
                                 "Default: accepted.", None),
    "injection_new_keyboard": ("Judge a just-attached keyboard strictly",
                               "Enabled: a keyboard attached moments before (a USB keystroke "
                               "injector enumerates as one) is an injector if 5 of its first 8 "
                               "keys come at machine speed. Disable where YubiKeys or barcode "
                               "scanners are plugged in and used at once. Default: enabled.",
                               None),
    "injection_allow_keyboards": ("Keyboards whose keys are not judged (Linux)",
                                  "Names of keyboards that type at machine speed by design "
                                  "(YubiKeys, barcode scanners), one per line, * and ? as "
                                  "wildcards, any case, e.g. Yubico YubiKey*. Their keys are "
                                  "neither judged as injection nor learned as the user's typing. "
                                  "A USB device can claim any name, so an injector could claim "
                                  "an allowed one: list only what the fleet uses. Only X11 on "
                                  "Linux can tell which keyboard typed a key; on Windows and "
                                  "macOS every keyboard is judged. Default: none.",
                                  "Keyboard names, one per line"),
    "injection_sensitivity": ("Keystroke injection sensitivity",
                              "How much machine-timed typing it takes to call it injection: "
                              "relaxed, balanced or strict. Strict catches a USB injector within "
                              "about 5 keys but also flags autocomplete and text-expander bursts. "
                              "Default: balanced.", "Sensitivity"),
    "retention_days": ("Audit log retention",
                       "Rotated audit log files older than this many days are deleted, "
                       "1 - 3650. Default: 90.", "Days"),
    "audit_max_mb": ("Audit log file size",
                     "Size of one audit log file before it is rotated, 1 - 1000 MB. Default: 10.",
                     "Megabytes"),
    "audit_backups": ("Audit log files kept",
                      "How many rotated audit log files are kept, 1 - 100. Default: 5.", "Files"),
    "sinks": ("SIEM destinations",
              "Where Cadence sends its alerts besides the local audit log: a JSON list of "
              "destinations, each an object with a type (syslog, webhook or splunk_hec) and its "
              "keys, e.g. [{\"type\": \"syslog\", \"host\": \"siem.example.com\", "
              "\"transport\": \"tls\"}] or [{\"type\": \"splunk_hec\", \"url\": "
              "\"https://hec.example.com:8088/services/collector\", \"token_file\": "
              "\"C:\\\\ProgramData\\\\Cadence\\\\hec.token\"}]. Prefer token_file or token_env to a "
              "token in the policy: policy values are readable by every user. A bad entry is "
              "reported and skipped; the others still work. Default: none.",
              "Destinations (JSON)"),
    "heartbeat_minutes": ("Heartbeat interval",
                          "How often Cadence sends a heartbeat to every SIEM destination, so a "
                          "silenced agent shows, 1 - 1440 minutes. Default: 15.", "Minutes"),
    "spool_max_records": ("Records kept per destination while it is down",
                          "How many records Cadence keeps for a SIEM destination that cannot be "
                          "reached, 100 - 1000000; the oldest are dropped first. Default: 10000.",
                          "Records"),
}
CHOICE_TEXT = {"observe": "Observe (audit log only)", "alert": "Alert the user",
               "lock": "Lock the session", "relaxed": "Relaxed (twice the evidence)",
               "balanced": "Balanced (no human flagged on the Aalto set)",
               "strict": "Strict (about 5 keys; flags autocomplete bursts)"}


def _fields():
    fields = dataclasses.fields(policy.Policy)
    missing = [f.name for f in fields if f.name not in TEXT]
    if missing:
        raise SystemExit(f"make-admx: describe {', '.join(missing)} in TEXT")
    return fields


def admx() -> str:
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           "<!-- Generated by scripts/make-admx.py from agent/policy.py; do not edit. -->",
           '<policyDefinitions xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" revision="1.0" '
           'schemaVersion="1.0" '
           'xmlns="http://schemas.microsoft.com/GroupPolicy/2006/07/PolicyDefinitions">',
           "  <policyNamespaces>",
           '    <target prefix="cadence" namespace="Cadence.Policies.Agent" />',
           "  </policyNamespaces>",
           '  <resources minRequiredRevision="1.0" />',
           "  <supportedOn>",
           "    <definitions>",
           '      <definition name="SUPPORTED_Cadence" displayName="$(string.SUPPORTED_Cadence)" />',
           "    </definitions>",
           "  </supportedOn>",
           "  <categories>",
           '    <category name="Cadence" displayName="$(string.Cadence)" />',
           "  </categories>",
           "  <policies>"]
    for f in _fields():
        name, default = f.name, f.default
        head = (f'    <policy name="{name}" class="Both" displayName="$(string.{name})" '
                f'explainText="$(string.{name}_Help)" key="{escape(KEY)}"')
        tail = ['      <parentCategory ref="Cadence" />',
                '      <supportedOn ref="SUPPORTED_Cadence" />']
        if isinstance(default, bool):
            out.append(head + f' valueName="{name}">')
            out += tail
            out += ['      <enabledValue><decimal value="1" /></enabledValue>',
                    '      <disabledValue><decimal value="0" /></disabledValue>']
        else:
            out.append(head + f' presentation="$(presentation.{name})">')
            out += tail
            out.append("      <elements>")
            if name in policy._CHOICES:
                out.append(f'        <enum id="{name}" valueName="{name}" required="true">')
                for choice in policy._CHOICES[name]:
                    out.append(f'          <item displayName="$(string.{name}_{choice})">'
                               f"<value><string>{choice}</string></value></item>")
                out.append("        </enum>")
            elif name == "sinks":  # a JSON string in the registry
                out.append(f'        <text id="{name}" valueName="{name}" required="true" '
                           'maxLength="16000" />')
            elif isinstance(default, tuple):
                out.append(f'        <multiText id="{name}" valueName="{name}" required="true" />')
            elif isinstance(default, float):
                out.append(f'        <text id="{name}" valueName="{name}" required="true" />')
            else:
                low, high = policy._RANGES[name]
                out.append(f'        <decimal id="{name}" valueName="{name}" required="true" '
                           f'minValue="{low}" maxValue="{high}" />')
            out.append("      </elements>")
        out.append("    </policy>")
    out += ["  </policies>", "</policyDefinitions>", ""]
    return "\n".join(out)


def adml() -> str:
    strings = [("Cadence", "Cadence"),
               ("SUPPORTED_Cadence", f"Cadence {__version__} and later")]
    presentations = []
    for f in _fields():
        name, default = f.name, f.default
        title, help_text, label = TEXT[name]
        strings += [(name, title), (f"{name}_Help", help_text)]
        if isinstance(default, bool):
            continue
        if name in policy._CHOICES:
            strings += [(f"{name}_{c}", CHOICE_TEXT[c]) for c in policy._CHOICES[name]]
            index = policy._CHOICES[name].index(default)
            control = (f'<dropdownList refId="{name}" noSort="true" defaultItem="{index}">'
                       f"{escape(label)}</dropdownList>")
        elif name == "sinks":
            control = f'<textBox refId="{name}"><label>{escape(label)}</label></textBox>'
        elif isinstance(default, tuple):
            control = f'<multiTextBox refId="{name}">{escape(label)}</multiTextBox>'
        elif isinstance(default, float):
            control = (f'<textBox refId="{name}"><label>{escape(label)}</label>'
                       f"<defaultValue>{default}</defaultValue></textBox>")
        else:
            control = (f'<decimalTextBox refId="{name}" defaultValue="{default}">'
                       f"{escape(label)}</decimalTextBox>")
        presentations.append(f'      <presentation id="{name}">{control}</presentation>')
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           "<!-- Generated by scripts/make-admx.py from agent/policy.py; do not edit. -->",
           '<policyDefinitionResources xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" revision="1.0" '
           'schemaVersion="1.0" '
           'xmlns="http://schemas.microsoft.com/GroupPolicy/2006/07/PolicyDefinitions">',
           "  <displayName>Cadence</displayName>",
           "  <description>Cadence: continuous behavioural authentication</description>",
           "  <resources>",
           "    <stringTable>"]
    out += [f'      <string id="{sid}">{escape(text)}</string>' for sid, text in strings]
    out += ["    </stringTable>", "    <presentationTable>"] + presentations
    out += ["    </presentationTable>", "  </resources>", "</policyDefinitionResources>", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    wanted = {ADMX: admx(), ADML: adml()}
    if "--check" in argv:
        stale = [str(p) for p, text in wanted.items()
                 if not p.exists() or p.read_text(encoding="utf-8") != text]
        if stale:
            print("make-admx: out of date: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
