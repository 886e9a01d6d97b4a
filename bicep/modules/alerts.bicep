// Alerts an operator acts on, each with a runbook paragraph in README "Operate" > "Alerts": an action
// group that mails the operators, and one scheduled query rule (a log search alert) per condition.
// The queries match what the code emits today (Python log records the Functions host and the
// OpenTelemetry exporter send to Application Insights as `traces`, function executions as
// `requests`, and the storage account's queue request log in Log Analytics), and crmsync's
// OpenTelemetry metrics under their instrument names (customMetrics: crmsync.items.parked, a counter,
// and crmsync.change_to_crm.latency, a histogram in seconds; shared/telemetry/signals.py).
// Docs: learn.microsoft.com/azure/azure-monitor/alerts/alerts-create-log-alert-rule,
//       learn.microsoft.com/azure/azure-monitor/reference/tables/storagequeuelogs

@description('Name prefix of the alert resources.')
param name string

@description('Azure region of the alert rules.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Address the action group mails when an alert fires.')
param alertEmail string

@description('Application Insights component the app sends telemetry to.')
param appInsightsId string

@description('Log Analytics workspace that receives the storage queue request log.')
param workspaceId string

@description('crmsync\'s job queue; the host moves a job that failed maxDequeueCount times to <queue>-poison.')
param jobQueue string

@description('Parked items in one hour above which the parked-items alert fires.')
param parkedItemsPerHour int

@description('95th percentile of change-to-CRM latency in milliseconds above which the latency alert fires.')
param changeToCrmP95Ms int

resource operators 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${name}-operators'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'crmsync'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// worker.py logs "mailbox <fingerprint> degraded: its sync job failed <n> times" (error) when a job
// goes to the poison queue and marks the mailbox degraded.
var degradedQuery = '''
traces | where message has "degraded: its sync job failed" | project timestamp
'''

// The queue service's request log: a job the host gave up on is a PutMessage on <queue>-poison;
// an operator who clears it deletes messages. The alert fires when more arrived than left.
var poisonQuery = format('''
StorageQueueLogs
| where Uri contains "/{0}-poison/messages"
| summarize added = countif(OperationName == "PutMessage"), removed = countif(OperationName == "DeleteMessage")
| extend growth = added - removed
''', jobQueue)

// The renewal timer (function renew_subscriptions) failed, threw, or logged an error while it ran.
var renewalQuery = '''
union isfuzzy=true
    (requests | where operation_Name == "renew_subscriptions" and success == false | project timestamp),
    (exceptions | where operation_Name == "renew_subscriptions" | project timestamp),
    (traces | where operation_Name == "renew_subscriptions" and severityLevel >= 3 | project timestamp)
'''

// The sync job logs "parked a <kind> item: <reason> (<code>)" (warning) per parked item; the metric
// crmsync.items.parked counts the same events. The larger of the two counts, so neither doubles.
var parkedQuery = '''
let fromLogs = toscalar(traces | where message startswith "parked a " | count);
let fromMetric = toscalar(customMetrics | where name == "crmsync.items.parked" | summarize sum(valueSum));
print parked = max_of(todouble(fromLogs), coalesce(todouble(fromMetric), 0.0))
'''

// Application Insights stores an OpenTelemetry histogram as per-interval aggregates (sum, count,
// min, max), not buckets: the query takes the count-weighted 95th percentile of the interval means,
// which is at most the true p95 (a conservative trigger; lower the threshold to compensate). The
// histogram is in seconds, the threshold in milliseconds.
var latencyQuery = '''
customMetrics
| where name == "crmsync.change_to_crm.latency" and valueCount > 0
| summarize p95 = 1000 * percentilew(valueSum / valueCount, 95, valueCount)
'''

var rules = [
  {
    key: 'mailbox-degraded'
    displayName: 'crmsync: a mailbox is degraded'
    description: 'A sync job failed maxDequeueCount times and its mailbox was marked degraded. Runbook: README "Alerts", a degraded mailbox.'
    severity: 2
    scope: appInsightsId
    query: degradedQuery
    timeAggregation: 'Count'
    measure: null
    threshold: 0
  }
  {
    key: 'poison-queue-growing'
    displayName: 'crmsync: the poison queue is growing'
    description: 'Jobs reached the poison queue faster than they were cleared. Runbook: README "Alerts", a growing poison queue.'
    severity: 2
    scope: workspaceId
    query: poisonQuery
    timeAggregation: 'Maximum'
    measure: 'growth'
    threshold: 0
  }
  {
    key: 'subscription-renewal-failed'
    displayName: 'crmsync: subscription renewal failed'
    description: 'The renewal timer failed or logged an error; subscriptions it did not renew expire. Runbook: README "Alerts", subscription renewal failures.'
    severity: 1
    scope: appInsightsId
    query: renewalQuery
    timeAggregation: 'Count'
    measure: null
    threshold: 0
  }
  {
    key: 'parked-items-growing'
    displayName: 'crmsync: parked items are growing'
    description: 'More items were parked in an hour than the threshold. Runbook: README "Alerts", parked items growing.'
    severity: 3
    scope: appInsightsId
    query: parkedQuery
    timeAggregation: 'Maximum'
    measure: 'parked'
    threshold: parkedItemsPerHour
  }
  {
    key: 'change-to-crm-latency'
    displayName: 'crmsync: change-to-CRM p95 over threshold'
    description: 'The 95th percentile of Outlook-change-to-CRM-write latency exceeded the threshold. Runbook: README "Alerts", change-to-CRM latency.'
    severity: 3
    scope: appInsightsId
    query: latencyQuery
    timeAggregation: 'Maximum'
    measure: 'p95'
    threshold: changeToCrmP95Ms
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in rules: {
    name: '${name}-${rule.key}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: rule.displayName
      description: rule.description
      severity: rule.severity
      enabled: true
      evaluationFrequency: 'PT15M'
      windowSize: 'PT1H'
      scopes: [
        rule.scope
      ]
      // A new workspace has no StorageQueueLogs table until the first queue request is logged.
      skipQueryValidation: true
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: rule.timeAggregation
            metricMeasureColumn: rule.measure
            operator: 'GreaterThan'
            threshold: rule.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: true
      actions: {
        actionGroups: [
          operators.id
        ]
      }
    }
  }
]

output actionGroupId string = operators.id
output alertRuleNames array = [for (rule, i) in rules: alertRules[i].name]
