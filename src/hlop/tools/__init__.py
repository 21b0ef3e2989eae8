"""What people call: the command line, studies over seeds, their tables, figures and
statistics, the paper's reference values."""
