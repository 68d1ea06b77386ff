"""Input data: embedded images, degradations, the grain pipeline."""
