"""soundnet8 engine."""
