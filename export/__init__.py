"""soundnet8 export."""
