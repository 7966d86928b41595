"""Zero-shot evaluation: scoring per task kind by XTREME-R's rules, alignment measures, and the alignment probe."""
