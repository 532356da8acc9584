"""The book's laboratory: every experiment of 深度学习轻松学 by its section number (`python -m examples.book
--list`), run on brewnet's own layers, nets and solvers. See registry.py to add one."""
