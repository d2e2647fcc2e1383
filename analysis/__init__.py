"""soundnet8 analysis."""
