"""Datasets generated offline (no download): n x n Sudoku with unique solutions, mazes."""
