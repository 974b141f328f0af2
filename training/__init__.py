"""Data sets, simulation, training and evaluation for PASSNet."""
