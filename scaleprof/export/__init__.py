"""Where a finished study goes besides its own directory: tools a team already watches."""
