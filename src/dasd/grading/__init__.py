"""Grading: answer extraction and verification, code tests in the sandbox."""
