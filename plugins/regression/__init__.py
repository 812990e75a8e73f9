"""Plugin ``regression``: the regression head."""

from fusionjax.hookspecs import hookimpl


@hookimpl
def fusionjax_register_components(registrar):
    registrar.head("regression", "fusionjax_plugins.regression.head:RegressionHead",
                     summary="MLP -> real values; MSE, MAE or Huber loss; MSE, MAE, R^2")
