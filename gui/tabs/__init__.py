"""The window's tabs: Train, and the placeholders of Results, Compare and Classify."""
