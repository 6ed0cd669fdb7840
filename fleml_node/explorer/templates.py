# ruff: noqa: E501  (HTML templates: long lines read better than split tags)
"""The explorer's Jinja2 templates and style sheet, kept in Python so the package needs no data
files. Flask autoescapes every ``.html`` template: member-controlled strings (labels, reasons,
CIDs) are always escaped; the only markup passed through is the chart, which escapes its own
texts (:mod:`fleml_node.explorer.chart`)."""

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d1d1d;background:#fafafa}
header{background:#203040;color:#fff;padding:8px 16px}
header a{color:#fff;margin-right:16px;text-decoration:none;font-weight:600}
main{padding:12px 16px;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 16px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef1f4}
code,.mono{font-family:ui-monospace,monospace;font-size:12px;white-space:nowrap}
.accepted,.PASS{color:#17692e}.flagged,.FAIL{color:#b3261e;font-weight:600}
.rejected{color:#7a4b00;font-weight:600}.INCONCLUSIVE{color:#7a4b00}
.pager a{margin-right:8px}.note{color:#555}
form{display:inline}button{padding:4px 12px}
"""

TEMPLATES = {
    "base.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{% block title %}FLEML explorer{% endblock %}</title>
<link rel="stylesheet" href="{{ url_for('style') }}"></head>
<body><header><a href="{{ url_for('consortium_page') }}">Consortium</a>
<a href="{{ url_for('rounds_page') }}" id="nav-rounds">Rounds</a>
<span class="note">FLEML explorer · chain {{ chain_id }} · read-only</span></header>
<main>{% block main %}{% endblock %}
<p class="note">JSON: <a href="{{ api_url }}">{{ api_url }}</a></p></main></body></html>
""",
    "macros.html": """
{% macro tx(hash, url) -%}
{%- if hash %}<code title="{{ hash }}">{{ hash[:10] }}…{{ hash[-6:] }}</code>
{%- if url %} <a href="{{ url }}" rel="noreferrer noopener">↗</a>{% endif %}{% endif -%}
{%- endmacro %}
{% macro addr(address, url, label='') -%}
<a href="{{ url_for('member_page', address=address) }}"><code>{{ address }}</code></a>
{%- if label %} <span class="label">{{ label }}</span>{% endif %}
{%- if url %} <a href="{{ url }}" rel="noreferrer noopener">↗</a>{% endif -%}
{%- endmacro %}
{% macro pager(d, endpoint) -%}
{% if d.pages > 1 %}<p class="pager">page {{ d.page }} of {{ d.pages }}:
{% if d.page > 1 %}<a href="{{ url_for(endpoint, page=d.page - 1, **kwargs) }}" rel="prev">newer</a>{% endif %}
{% if d.page < d.pages %}<a href="{{ url_for(endpoint, page=d.page + 1, **kwargs) }}" rel="next">older</a>{% endif %}
</p>{% endif %}
{%- endmacro %}
{% macro short(v) -%}<code title="{{ v }}">{{ v[:10] }}…{{ v[-6:] }}</code>{%- endmacro %}
{% macro num(v) %}{% if v is none %}–{% else %}{{ '%.4g' % v }}{% endif %}{% endmacro %}
""",
    "consortium.html": """{% extends "base.html" %}{% import "macros.html" as m %}
{% block title %}Consortium {{ d.address }}{% endblock %}
{% block main %}
<h1>Consortium <code>{{ d.address }}</code>{% if d.address_url %} <a href="{{ d.address_url }}" rel="noreferrer noopener">↗</a>{% endif %}</h1>
<table>
<tr><th>chain</th><td>{{ d.chain_id }} ({{ d.network }}), deployed in block {{ d.deployed_block }}, {{ d.confirmations }} confirmation(s)</td></tr>
<tr><th>operator</th><td><code>{{ d.operator }}</code></td></tr>
<tr><th>aggregator</th><td><code>{{ d.aggregator }}</code></td></tr>
<tr><th>rounds</th><td><a href="{{ url_for('rounds_page') }}">{{ d.current_round }}</a>, last accepted {{ d.last_accepted_round }}</td></tr>
<tr><th>policy</th><td>{{ d.policy.mode }} submissions, rounds of {{ d.policy.min_round_seconds }}–{{ d.policy.max_round_seconds }} s,
minimum {% if d.policy.min_submissions %}{{ d.policy.min_submissions }}{% else %}{{ d.policy.min_submissions_bps / 100 }}% of active members{% endif %},
{{ d.policy.grace_seconds }} s grace{% if d.policy.reveal_seconds %}, {{ d.policy.reveal_seconds }} s reveal{% endif %},
attestations required {{ d.policy.attestations_required }}{% if d.policy.attestations_required %} within {{ d.policy.attestation_window_seconds }} s{% endif %}</td></tr>
{% if d.pending_policy %}<tr><th>pending policy</th><td>{{ d.pending_policy }}</td></tr>{% endif %}
<tr><th>validation set</th><td>{% if d.validation_set %}<code>{{ d.validation_set.hash }}</code> <code>{{ d.validation_set.cid }}</code>{% else %}none{% endif %}</td></tr>
</table>
<h2>Members ({{ d.active_members }} active, {{ d.total }} admitted)</h2>
<table id="members"><tr><th>#</th><th>member</th><th>label</th><th>state</th><th>admitted</th><th>removed</th></tr>
{% for mb in d.members %}<tr><td>{{ mb.index }}</td><td>{{ m.addr(mb.address, mb.address_url) }}</td><td>{{ mb.label }}</td>
<td>{{ 'active' if mb.active else 'removed' }}</td>
<td>block {{ mb.admitted.block }} {{ mb.admitted.time }} {{ m.tx(mb.admitted.tx, mb.admitted.tx_url) }}</td>
<td>{% if mb.removed %}block {{ mb.removed.block }} {{ mb.removed.time }} {{ m.tx(mb.removed.tx, mb.removed.tx_url) }}{% endif %}</td></tr>
{% endfor %}</table>{{ m.pager(d, 'consortium_page') }}
{% endblock %}""",
    "rounds.html": """{% extends "base.html" %}{% import "macros.html" as m %}
{% block title %}Rounds{% endblock %}
{% block main %}<h1>Rounds ({{ d.total }})</h1>
<table id="rounds"><tr><th>round</th><th>opened</th><th>status</th><th>submissions / quorum (min)</th>
<th>rejected</th><th>flagged</th><th>gas</th><th>attestations pass / fail (k)</th><th>accuracy</th></tr>
{% for r in d.rounds %}<tr><td><a href="{{ url_for('round_page', round_id=r.round) }}" class="round-link">round {{ r.round }}</a></td>
<td>{{ r.opened }}</td><td>{{ r.status }}{% if r.accepted %}, accepted{% endif %}</td>
<td>{{ r.submissions }} / {{ r.quorum }} ({{ r.min_submissions }})</td>
<td>{{ '–' if r.rejected is none else r.rejected }}</td><td>{{ '–' if r.flagged is none else r.flagged }}</td>
<td>{{ '{:,}'.format(r.gas) }}</td>
<td>{{ r.attestations.passes }} / {{ r.attestations.fails }} ({{ r.attestations.required }})</td>
<td>{{ m.num(r.accuracy) }}</td></tr>{% endfor %}</table>
{{ m.pager(d, 'rounds_page') }}
<p class="note">rejected/flagged come from each round's report on IPFS (– when it has none or cannot be fetched); accuracy when a report carries an evaluation.</p>
{% endblock %}""",
    "round.html": """{% extends "base.html" %}{% import "macros.html" as m %}
{% block title %}Round {{ d.round }}{% endblock %}
{% block main %}<h1>Round {{ d.round }}: <span id="round-status">{{ d.status }}</span>{% if d.accepted %} (accepted){% endif %}</h1>
<p>{{ d.mode }} submissions, deadline {{ d.deadline }}{% if d.reveal_deadline %}, reveal until {{ d.reveal_deadline }}{% endif %};
{{ d.submissions_count }} submission(s), quorum {{ d.quorum }}, minimum {{ d.min_submissions }}.
{% if d.defense %}Defense <b>{{ d.defense.method }}</b> {{ d.defense.params }}.{% endif %}</p>
{% if d.report_error %}<p class="FAIL">{{ d.report_error }}</p>{% endif %}
<h2>Timeline</h2><table id="timeline"><tr><th>event</th><th>block</th><th>time (UTC)</th><th>transaction</th><th>gas</th></tr>
{% for e in d.timeline %}<tr><td>{{ e.event }}</td><td>{{ e.block }}</td><td>{{ e.time }}</td><td>{{ m.tx(e.tx, e.tx_url) }}</td><td>{{ '{:,}'.format(e.gas) }}</td></tr>{% endfor %}
</table>
<h2>Submissions</h2>
<table id="submissions"><tr><th>#</th><th>member</th><th>label</th><th>update hash</th><th>CID</th><th>transaction</th><th>gas</th>
<th>status</th><th>reason</th><th>{{ d.score_name or 'score' }}</th><th>coefficient</th></tr>
{% for s in d.submissions %}<tr class="sub" data-member="{{ s.member }}"><td>{{ s.index }}</td>
<td><a href="{{ url_for('member_page', address=s.member) }}" class="member-link"><code>{{ s.member }}</code></a>{% if s.member_url %} <a href="{{ s.member_url }}" rel="noreferrer noopener">↗</a>{% endif %}</td>
<td class="label">{{ s.label }}</td><td>{{ m.short(s.hash) }}</td><td>{{ m.short(s.cid) }}</td>
<td>{{ m.tx(s.tx, s.tx_url) }}</td><td>{{ '{:,}'.format(s.gas) }}</td>
<td class="status {{ s.status }}">{{ s.status or '–' }}</td><td class="reason">{{ s.reason }}</td>
<td class="score">{{ m.num((s.scores or {}).get(d.score_name)) }}</td><td class="coefficient">{{ m.num(s.coefficient) }}</td></tr>{% endfor %}
</table>
{{ chart }}
<h2>Objects</h2><ul>
{% for name, ref in d.downloads.items() %}<li>{{ name }}: <a href="{{ url_for('download', round_id=d.round, what=name) }}" download>download</a>
<code>{{ ref.hash }}</code> <code>{{ ref.cid }}</code></li>{% endfor %}</ul>
<h2>Attestations: {{ d.attestations.passes }} pass, {{ d.attestations.fails }} fail{% if d.attestations.inconclusive %}, {{ d.attestations.inconclusive }} inconclusive{% endif %} (required {{ d.attestations.required }}{% if d.attestations.deadline %}, window until {{ d.attestations.deadline }}{% endif %})</h2>
{% if d.attestations.events %}<table id="attestations"><tr><th>member</th><th>verdict</th><th>audit</th><th>block</th><th>time</th><th>transaction</th></tr>
{% for a in d.attestations.events %}<tr><td>{{ m.addr(a.member, none, a.label) }}</td><td class="{{ a.verdict }}">{{ a.verdict }}</td>
<td><code>{{ a.audit_cid }}</code></td><td>{{ a.block }}</td><td>{{ a.time }}</td><td>{{ m.tx(a.tx, a.tx_url) }}</td></tr>{% endfor %}</table>{% endif %}
{% if d.status in ('finalized', 'rejected') %}
<form method="post" action="{{ url_for('audit_page', round_id=d.round) }}"><button id="audit" type="submit">Audit this round</button></form>
<span class="note">runs the same checks as <code>fleml-node audit --round {{ d.round }}</code> (one audit at a time)</span>{% endif %}
{% endblock %}""",
    "member.html": """{% extends "base.html" %}{% import "macros.html" as m %}
{% block title %}Member {{ d.address }}{% endblock %}
{% block main %}<h1>Member #{{ d.index }} <code id="member-address">{{ d.address }}</code>{% if d.address_url %} <a href="{{ d.address_url }}" rel="noreferrer noopener">↗</a>{% endif %}</h1>
<p>label <b id="member-label">{{ d.label }}</b>, {{ 'active' if d.active else 'removed' }};
admitted in block {{ d.admitted.block }} ({{ d.admitted.time }}) {{ m.tx(d.admitted.tx, d.admitted.tx_url) }}
{% if d.removed %}, removed in block {{ d.removed.block }} ({{ d.removed.time }}){% endif %}</p>
<h2>History</h2>
<table id="history"><tr><th>round</th><th>round status</th><th>submitted</th><th>status</th><th>reason</th><th>score</th><th>coefficient</th><th>transaction</th><th>attested</th></tr>
{% for h in d.history %}<tr class="h" data-round="{{ h.round }}"><td><a href="{{ url_for('round_page', round_id=h.round) }}">round {{ h.round }}</a></td>
<td>{{ h.round_status }}</td><td>{{ 'yes' if h.submitted else 'no' }}</td>
<td class="status {{ h.status }}">{{ h.status or '–' }}</td><td class="reason">{{ h.reason or '' }}</td>
<td class="score">{% if h.score_name %}{{ h.score_name }} {{ m.num(h.score) }}{% endif %}</td><td class="coefficient">{{ m.num(h.coefficient) }}</td>
<td>{{ m.tx(h.tx, h.tx_url) }}</td><td>{% if h.attested %}{{ h.attested.verdict }}{% endif %}</td></tr>{% endfor %}
</table>{{ m.pager(d, 'member_page', address=d.address) }}
{{ chart }}
{% endblock %}""",
    "audit.html": """{% extends "base.html" %}
{% block title %}Audit of round {{ d.round }}{% endblock %}
{% block main %}<h1>Audit of <a href="{{ url_for('round_page', round_id=d.round) }}">round {{ d.round }}</a>: <span id="verdict" class="{{ d.verdict }}">{{ d.verdict }}</span></h1>
<table id="checks"><tr><th>check</th><th>result</th><th>detail</th></tr>
{% for c in d.checks %}<tr><td>{{ c.name }}</td><td class="{{ c.result }}">{{ c.result }}</td><td>{{ c.detail }}</td></tr>{% endfor %}</table>
<h2>Members</h2><table id="audit-members"><tr><th>#</th><th>member</th><th>in report</th><th>result</th><th>detail</th></tr>
{% for mb in d.members %}<tr><td>{{ mb.index }}</td><td><code>{{ mb.address }}</code></td><td>{{ mb.status_in_report }}</td><td class="{{ mb.result }}">{{ mb.result }}</td><td>{{ mb.detail }}</td></tr>{% endfor %}</table>
<p class="note">Nothing is kept: run it again to re-check.</p>
{% endblock %}""",
    "error.html": """{% extends "base.html" %}{% block title %}{{ code }}{% endblock %}
{% block main %}<h1>{{ code }}</h1><p id="error">{{ message }}</p>{% endblock %}""",
}
