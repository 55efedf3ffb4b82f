"""Layer 0 — persistence without torch: atomic writes, the run manifest, keyed records with codecs,
content caches. Everything resumable in kneuron goes through here."""
