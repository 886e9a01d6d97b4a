// crmsync in one resource group: a Flex Consumption function app (Python 3.11) running as a
// user-assigned identity, identity-only storage with crmsync's tables and queue, Application
// Insights on Log Analytics with local auth off, and (for the certificate credential) Key Vault.
// By default storage and Key Vault refuse public network access and the app reaches them through
// private endpoints in its own VNet; App Service authentication (Entra ID) guards every route but
// Graph's webhooks and the health probe; alert rules mail the operators.
// Local modules of plain resource declarations only, so offline scanners read everything.
// Deploy with `crmsync deploy` (see README "Deploy"); parameters are documented in main.bicepparam.

targetScope = 'resourceGroup'

@description('Azure region; one that offers the Flex Consumption plan.')
param location string = resourceGroup().location

@description('Short lowercase prefix of every resource name (3-11 letters or digits).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'crmsync'

@description('Tags applied to every resource.')
param tags object = {
  app: 'crmsync'
}

@description('Entra tenant of the mailboxes and the crmsync app registration.')
param tenantId string = tenant().tenantId

@description('Application (client) id of the crmsync Entra app registration.')
param entraClientId string

@description('federated: the app identity is a federated credential of the Entra app (no secret). certificate: a certificate in Key Vault.')
@allowed([
  'federated'
  'certificate'
])
param credentialKind string = 'federated'

@description('Name of the Key Vault certificate that holds the Entra app credential (certificate kind only).')
param certificateName string = 'crmsync-entra-app'

@description('Optional object id of the administrator allowed to import that certificate (Key Vault Certificates Officer).')
param certificateImporterPrincipalId string = ''

@description('Dataverse organization URL, e.g. https://contoso.crm.dynamics.com')
param dataverseUrl string

@description('Dataverse Web API path.')
param dataverseApiPath string = '/api/data/v9.2'

@description('Microsoft Graph base URL (national clouds differ).')
param graphUrl string = 'https://graph.microsoft.com/v1.0'

@description('Public host name Graph calls for webhooks; empty means <app name>.azurewebsites.net.')
param publicHostName string = ''

@description('Prefix of crmsync\'s table names.')
param tablePrefix string = 'crmsync'

@description('Name of crmsync\'s job queue.')
param jobQueue string = 'crmsync-jobs'

@description('NCRONTAB schedule of the subscription renewal timer.')
param renewSchedule string = '0 */30 * * * *'

@description('NCRONTAB schedule of the CRM -> Outlook sweep timer.')
param sweepSchedule string = '0 */15 * * * *'

@description('NCRONTAB schedule of the parked-item retry timer.')
param parkedRetrySchedule string = '0 5 * * * *'

@description('The key Dataverse sends (?code=) to the CRM webhook; empty: the webhook refuses every call and the change-tracking timer alone carries CRM changes to Outlook. Pass it from a secret store, never in a parameter file.')
@secure()
param crmWebhookKey string = ''

@description('NCRONTAB schedule of the CRM change-tracking timer (CRM -> Outlook safety net and deletes).')
param crmChangesSchedule string = '0 */5 * * * *'

@description('Seconds a mailbox lease lasts (15-3600).')
@minValue(15)
@maxValue(3600)
param leaseSeconds int = 120

@description('Share of linked items a single delta may delete before the mass-delete brake trips (0-1, as text).')
param massDeleteRatio string = '0.5'

@description('Retries of a parked item before it stays parked as given up (status says what to do).')
@minValue(1)
@maxValue(100)
param parkedMaxAttempts int = 10

@description('Seconds a worker keeps the organization\'s field directions (syncattributemapping) and the users\' column security before reading them again.')
@minValue(0)
@maxValue(86400)
param fieldSettingsTtlSeconds int = 300

@description('Seconds a worker trusts its read of a mailbox\'s deployment claim before reading it again (how long an old deployment may go on after another took the mailbox over).')
@minValue(0)
@maxValue(3600)
param claimCheckSeconds int = 300

@description('Outlook\'s request budget per mailbox and its window (Graph throttling limits: 10,000 requests in 10 minutes); crmsync paces each mailbox\'s Graph requests at graphBudgetShare of it.')
@minValue(2)
param graphMailboxBudget int = 10000

@minValue(1)
@maxValue(86400)
param graphBudgetWindowSeconds int = 600

@description('Share of the per-mailbox Graph budget crmsync uses (text, between 0 and 1).')
param graphBudgetShare string = '0.95'

@description('Seconds a worker waits for one Graph answer before it gives up on the request (the run fails and the queue retries it).')
@minValue(1)
@maxValue(600)
param graphTimeoutSeconds int = 60

@description('Seconds a worker waits for one Dataverse answer before it gives up on the request (replay-safe requests are sent again).')
@minValue(1)
@maxValue(600)
param dataverseTimeoutSeconds int = 120

@description('Largest notification body accepted, in bytes.')
param maxNotificationBytes int = 1000000

@description('Storage redundancy; use Standard_GRS in a region without availability zones.')
@allowed([
  'Standard_GZRS'
  'Standard_RAGZRS'
  'Standard_GRS'
  'Standard_RAGRS'
])
param storageSku string = 'Standard_GZRS'

@description('Most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Days Log Analytics keeps telemetry.')
param logRetentionDays int = 30

@description('Private networking: storage and Key Vault refuse public network access and are reached through private endpoints from the app\'s VNet integration. false only if you must run `crmsync mailbox ...` from a workstation against storage (README "Deploy").')
param privateNetworking bool = true

@description('Address space of crmsync\'s VNet (private networking only).')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Subnet of the app\'s VNet integration, delegated to Microsoft.App/environments (/27 or larger).')
param appSubnetPrefix string = '10.40.0.0/24'

@description('Subnet of the private endpoints.')
param endpointSubnetPrefix string = '10.40.1.0/24'

@description('Client id of the Entra app registration that guards the admin API (App Service authentication; its app role crmsync.Admin). Empty means the crmsync app registration (entraClientId).')
param adminApiClientId string = ''

@description('Address the alerts mail (the action group\'s email receiver).')
param alertEmail string

@description('Parked items in one hour above which the parked-items alert fires.')
@minValue(0)
param parkedItemsPerHour int = 10

@description('95th percentile of change-to-CRM latency (ms) above which the latency alert fires.')
@minValue(1000)
param changeToCrmP95Ms int = 60000

var suffix = uniqueString(subscription().id, resourceGroup().id, namePrefix)
var appName = '${namePrefix}-${suffix}'
var storageAccountName = take(toLower(replace('${namePrefix}${suffix}', '-', '')), 24)
var keyVaultName = take('${namePrefix}kv${suffix}', 24)
var usesCertificate = credentialKind == 'certificate'
var deploymentContainerName = 'app-package'
// Same names shared/store creates: CRMSYNC_TABLE_PREFIX + suffix.
var tableSuffixes = [
  'registry'
  'links'
  'syncstate'
  'subscriptions'
  'parked'
  'audit'
  'tracking'
]
// A Key Vault reference the platform resolves with keyVaultReferenceIdentity (the app identity).
var certificateReference = usesCertificate ? '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${certificateName})' : ''
var appHostName = empty(publicHostName) ? '${appName}.azurewebsites.net' : publicHostName
var notificationUrl = 'https://${appHostName}/api/notifications'
var lifecycleUrl = 'https://${appHostName}/api/lifecycle'
// Routes App Service authentication leaves anonymous: Graph cannot present an Entra token (the
// webhooks check clientState), and the health probe. Everything else needs a token.
var anonymousPaths = [
  '/api/notifications'
  '/api/lifecycle'
  '/api/health'
  '/api/crm/webhook' // Dataverse's WebhookKey (?code=) is checked by the function itself
]
// The app role an admin API caller must hold (bicep/entra/admin-api-app-roles.json).
var adminRole = 'crmsync.Admin'
var adminAudienceClientId = empty(adminApiClientId) ? entraClientId : adminApiClientId

module identity 'modules/identity.bicep' = {
  name: 'crmsync-identity'
  params: {
    name: '${appName}-id'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'crmsync-monitoring'
  params: {
    name: appName
    location: location
    tags: tags
    retentionInDays: logRetentionDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'crmsync-storage'
  params: {
    name: storageAccountName
    location: location
    tags: tags
    skuName: storageSku
    deploymentContainerName: deploymentContainerName
    tableNames: [for tableSuffix in tableSuffixes: '${tablePrefix}${tableSuffix}']
    queueNames: [
      jobQueue
      '${jobQueue}-poison'
    ]
    workspaceId: monitoring.outputs.workspaceId
    privateNetworking: privateNetworking
  }
}

module keyVault 'modules/keyvault.bicep' = if (usesCertificate) {
  name: 'crmsync-keyvault'
  params: {
    name: keyVaultName
    location: location
    tags: tags
    workspaceId: monitoring.outputs.workspaceId
    privateNetworking: privateNetworking
  }
}

module network 'modules/network.bicep' = if (privateNetworking) {
  name: 'crmsync-network'
  params: {
    name: appName
    location: location
    tags: tags
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
    endpointSubnetPrefix: endpointSubnetPrefix
    storageAccountName: storage.outputs.name
    keyVaultName: usesCertificate ? keyVaultName : ''
  }
  dependsOn: [
    keyVault
  ]
}

module alerts 'modules/alerts.bicep' = {
  name: 'crmsync-alerts'
  params: {
    name: appName
    location: location
    tags: tags
    alertEmail: alertEmail
    appInsightsId: monitoring.outputs.appInsightsId
    workspaceId: monitoring.outputs.workspaceId
    jobQueue: jobQueue
    parkedItemsPerHour: parkedItemsPerHour
    changeToCrmP95Ms: changeToCrmP95Ms
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'crmsync-rbac'
  params: {
    appPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: usesCertificate ? keyVaultName : ''
    certificateImporterPrincipalId: certificateImporterPrincipalId
  }
  dependsOn: [
    keyVault
  ]
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'crmsync-functionapp'
  params: {
    name: appName
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.connectionString
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    maxRequestBodyBytes: maxNotificationBytes
    appSubnetId: privateNetworking ? network.outputs.appSubnetId : ''
    tenantId: tenantId
    adminApiClientId: adminAudienceClientId
    anonymousPaths: anonymousPaths
    // Every setting shared/config.py reads (tests/deploy checks this list against setting_names()).
    crmsyncSettings: {
      CRMSYNC_TENANT_ID: tenantId
      CRMSYNC_CLIENT_ID: entraClientId
      CRMSYNC_CREDENTIAL_KIND: credentialKind
      CRMSYNC_MANAGED_IDENTITY_CLIENT_ID: identity.outputs.clientId
      CRMSYNC_CLIENT_CERTIFICATE: certificateReference
      CRMSYNC_GRAPH_URL: graphUrl
      CRMSYNC_DATAVERSE_URL: dataverseUrl
      CRMSYNC_DATAVERSE_API_PATH: dataverseApiPath
      CRMSYNC_NOTIFICATION_URL: notificationUrl
      CRMSYNC_LIFECYCLE_URL: lifecycleUrl
      CRMSYNC_MAX_NOTIFICATION_BYTES: string(maxNotificationBytes)
      CRMSYNC_TABLE_PREFIX: tablePrefix
      CRMSYNC_JOB_QUEUE: jobQueue
      CRMSYNC_RENEW_SCHEDULE: renewSchedule
      CRMSYNC_SWEEP_SCHEDULE: sweepSchedule
      CRMSYNC_PARKED_RETRY_SCHEDULE: parkedRetrySchedule
      CRMSYNC_CRM_CHANGES_SCHEDULE: crmChangesSchedule
      CRMSYNC_CRM_WEBHOOK_KEY: crmWebhookKey
      CRMSYNC_LEASE_SECONDS: string(leaseSeconds)
      CRMSYNC_MASS_DELETE_RATIO: massDeleteRatio
      CRMSYNC_PARKED_MAX_ATTEMPTS: string(parkedMaxAttempts)
      CRMSYNC_FIELD_SETTINGS_TTL_SECONDS: string(fieldSettingsTtlSeconds)
      CRMSYNC_CLAIM_CHECK_SECONDS: string(claimCheckSeconds)
      CRMSYNC_GRAPH_MAILBOX_BUDGET: string(graphMailboxBudget)
      CRMSYNC_GRAPH_BUDGET_WINDOW_SECONDS: string(graphBudgetWindowSeconds)
      CRMSYNC_GRAPH_BUDGET_SHARE: graphBudgetShare
      CRMSYNC_GRAPH_TIMEOUT_SECONDS: string(graphTimeoutSeconds)
      CRMSYNC_DATAVERSE_TIMEOUT_SECONDS: string(dataverseTimeoutSeconds)
    }
  }
  dependsOn: [
    rbac
  ]
}

@description('Graph change-notification webhook (subscriptions\' notificationUrl).')
output notificationUrl string = notificationUrl

@description('Graph lifecycle-notification webhook (subscriptions\' lifecycleNotificationUrl).')
output lifecycleUrl string = lifecycleUrl

@description('Name of the function app (the zip deployment target).')
output functionAppName string = functionApp.outputs.name

@description('Default host name Azure assigned to the app.')
output functionAppHostName string = functionApp.outputs.defaultHostName

@description('Object id of the app identity: the subject of the Entra app\'s federated credential.')
output identityPrincipalId string = identity.outputs.principalId

@description('Client id of the app identity.')
output identityClientId string = identity.outputs.clientId

@description('Client id of the app registration whose tokens the admin API accepts (audience api://<id>).')
output adminApiClientId string = adminAudienceClientId

@description('App role a caller of /api/admin/* must be assigned (README "Deploy", step 5).')
output adminRole string = adminRole

@description('Key Vault for the certificate (empty for the federated credential).')
output keyVaultName string = usesCertificate ? keyVaultName : ''
