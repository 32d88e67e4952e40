#!/bin/sh
# Remove Cadence (run as root, e.g. a Jamf policy script). Users' profiles stay in their
# ~/Library/Application Support/cadence: `cadence forget` deletes one.
PLIST=/Library/LaunchAgents/org.cadence.agent.plist
for uid in $(/bin/ps -axo uid=,comm= | /usr/bin/awk '/Cadence.app\/Contents\/MacOS\/cadence/ {print $1}' | /usr/bin/sort -u); do
  /bin/launchctl bootout "gui/$uid/org.cadence.agent" 2>/dev/null || true
done
/bin/rm -f "$PLIST"
/bin/rm -rf /Applications/Cadence.app
/usr/sbin/pkgutil --forget org.cadence.agent.pkg 2>/dev/null || true
exit 0
