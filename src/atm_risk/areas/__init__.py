"""Area layers: boundaries with population, border lines, motorway access, police stations."""
