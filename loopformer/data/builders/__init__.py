"""Datasets built from published sources: Sudoku-Extreme and Maze-Hard CSV files, ARC-AGI JSON files."""
