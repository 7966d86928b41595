"""The study's rules, free of Ray, torch and I/O beyond the cache: errors, the protocol (metric keys, selection, target
languages), languages and families, arms, XTREME-R metrics."""
