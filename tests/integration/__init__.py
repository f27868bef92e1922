"""Whole runs and subprocesses (training, evaluation, torchrun, the commands as typed), one module per component;
conftest.py marks every test here `integration`. A module shares the fixtures and helpers of its component's
unit module by importing them from there (tests.unit.test_<component>)."""
