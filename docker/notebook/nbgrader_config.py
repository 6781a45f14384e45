# nbgrader in a learner's session: assignments come from the platform's exchange service
# (assessments.exchange.client over HTTP, with the session's hub token), not a shared directory.
# Installed as <notebook env>/etc/jupyter/nbgrader_config.py.
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)
c.ExchangeFactory.exchange = "assessments.exchange.client.Exchange"
c.ExchangeFactory.list = "assessments.exchange.client.ExchangeList"
c.ExchangeFactory.fetch_assignment = "assessments.exchange.client.ExchangeFetchAssignment"
c.ExchangeFactory.submit = "assessments.exchange.client.ExchangeSubmit"
c.ExchangeFactory.fetch_feedback = "assessments.exchange.client.ExchangeFetchFeedback"
# One folder per course in the learner's home: the same assignment id may exist in two courses.
c.Exchange.path_includes_course = True
