"""Grading the MLP lab: the instructor's autograder (what students import, the self-check and the banned-calls
rule, is outside this package: ``coursekit.selfcheck``, ``coursekit.banned_calls``).

The autograder runs each submission in a sandbox (``sandbox``, ``runner``), compares the values it
sends back in the grader's own process (``labspec``, ``grade``), and grades a whole class into a
gradebook and Gradescope results (``batch``, ``gradescope``). ``coursekit grade --help`` starts there.
"""
