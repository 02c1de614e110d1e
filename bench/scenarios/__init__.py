"""The five scenarios and the Nchan comparison; each module has ``add_arguments`` and ``run``."""
