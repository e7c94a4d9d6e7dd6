"""Test aids that ship with the package so that tests of an installed memberpulse can use them: fault
injection for the Whop API simulator (:mod:`memberpulse.testing.whop_faults`) and kill points for crash tests
(:mod:`memberpulse.testing.kill_points`). The product never imports this package (an import-linter contract
forbids it).
"""
