"""HTCondor workload: elastic startd domains sized by the idle jobs of their schedds."""
