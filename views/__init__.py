"""Views of stored rows: the chart catalogue, the CLI table, the standalone HTML report, run comparison and
the samples HTML. Views read rows; they never run anything."""
