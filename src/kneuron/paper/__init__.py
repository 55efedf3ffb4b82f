"""The paper's modules and tables over runs: Table 1, LIKN (Module 2) and Table 2, DKN (Module 3) and Table 3, reproduce, report."""
