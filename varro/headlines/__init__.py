"""Headline sources: RSS/Atom feeds, JSON/JSONL/CSV files and the bundled sample days.

Every source yields `RawItem`s; `collect` turns them into one day's normalised,
deduplicated, filtered and capped `Headline`s plus a report per source.
"""
