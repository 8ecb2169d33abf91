"""Token-role ids: the one definition every module uses (no imports, so anything can import it).

A response token is planning (choosing what to do next), execution (carrying out the chosen step) or
other (markup, special tokens, the final answer). Role arrays are int8 with these values.
"""

OTHER, PLANNING, EXECUTION = 0, 1, 2
ROLE_NAMES = ("other", "planning", "execution")  # indexed by role id
