"""What the user gives: the species config, metadata tables in four formats, the ENA portal."""
