"""The HTML accuracy report (L7): records in, one self-contained HTML file out."""
