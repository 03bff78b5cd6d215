import sys

from models.tiny import main

sys.exit(main(sys.argv[1:]))
