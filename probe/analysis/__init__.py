"""Analysis: captures → metric families (per-fact arrays) → headline numbers → tables, figures, verdict."""
