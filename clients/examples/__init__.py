"""Examples of using Sinergi: the `make demo` story (demo.py) and a Node.js client (node/)."""
