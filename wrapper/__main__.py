"""``python3 -m wrapper`` behaves exactly like the installed ``virt-v2v-wrapper``."""
from wrapper.cli import console_main

if __name__ == "__main__":
    console_main()
