"""The local-stack launcher behind `./stack`: see cli.py for the commands, components/ for the parts."""
