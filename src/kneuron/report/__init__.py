"""Layer 0 — presentation: one Table model rendered by rich, Markdown and HTML; statistics helpers
(`ci`, AUROC) and the one progress helper."""
