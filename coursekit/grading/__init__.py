"""Grading the MLP lab: the student's self-check and the instructor's autograder.

The autograder runs each submission in a sandbox (``sandbox``, ``runner``), compares the values it
sends back in the grader's own process (``labspec``, ``grade``), and grades a whole class into a
gradebook and Gradescope results (``batch``, ``gradescope``). ``coursekit grade --help`` starts there.
"""
