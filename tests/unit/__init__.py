# A package, so same-named test modules in tests/unit and tests/integration (test_resume.py) can coexist.
