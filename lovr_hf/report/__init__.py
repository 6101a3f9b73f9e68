"""What people read: the dataset card, result tables, plots, summaries, the HTML report."""
