"""Phone calls over SIP (issue 12, docs/sip.md): signalling, media, webhook, endpoint."""
