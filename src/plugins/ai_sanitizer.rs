//! `ai-sanitizer` (work in progress).
