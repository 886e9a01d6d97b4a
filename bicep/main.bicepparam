// crmsync deployment parameters. Copy this file next to main.bicep (for example
// bicep/prod.bicepparam), fill in the two REQUIRED values, choose the credential kind, and pass it to
// `crmsync deploy run --parameters bicep/prod.bicepparam`. Every other value is the default
// main.bicep would use anyway; it is listed so the whole configuration is visible in one place.
using 'main.bicep'

// REQUIRED. Application (client) id of the crmsync Entra app registration
// (README "Deploy", step 2). Not a secret.
param entraClientId = '00000000-0000-0000-0000-000000000000'

// REQUIRED. Your Dataverse organization URL (Power Platform admin center > Environments >
// your environment > Environment URL), without a trailing path.
param dataverseUrl = 'https://contoso.crm.dynamics.com'

// REQUIRED. Who gets the alerts (README "Operate" > "Alerts"): an address or distribution list.
param alertEmail = 'crmsync-operators@contoso.com'

// CHOOSE. How crmsync proves it is the Entra app:
//   'federated'   - the function app's managed identity is a federated credential of the
//                   Entra app; no secret or certificate exists anywhere (recommended);
//   'certificate' - a certificate you import into the Key Vault this deployment creates.
param credentialKind = 'federated'

// Certificate kind only: name of the Key Vault certificate, and the object id of the admin
// who imports it (gets Key Vault Certificates Officer on that vault; '' to grant it yourself).
param certificateName = 'crmsync-entra-app'
param certificateImporterPrincipalId = ''

// The region is the resource group's (`crmsync deploy run --location`); it must offer the
// Flex Consumption plan (`az functionapp list-flexconsumption-locations`).

// Short lowercase prefix of every resource name; names get a stable unique suffix, so
// redeploying to the same resource group updates the same resources.
param namePrefix = 'crmsync'

// Storage redundancy. Standard_GZRS needs a region with availability zones; use
// Standard_GRS elsewhere.
param storageSku = 'Standard_GZRS'

// Public host name Graph calls for webhooks: '' means <app>.azurewebsites.net. Set it when
// you put a custom domain or a gateway in front of the app.
param publicHostName = ''

// Service endpoints: change only for national clouds.
param graphUrl = 'https://graph.microsoft.com/v1.0'
param dataverseApiPath = '/api/data/v9.2'

// Names of crmsync's tables (prefix + registry, links, syncstate, subscriptions, parked,
// audit) and of its job queue.
param tablePrefix = 'crmsync'
param jobQueue = 'crmsync-jobs'

// Timers (NCRONTAB with seconds): renew Graph subscriptions, pull CRM changes to Outlook,
// retry parked items.
param renewSchedule = '0 */30 * * * *'
param sweepSchedule = '0 */15 * * * *'
param parkedRetrySchedule = '0 5 * * * *'

// Sync safety: mailbox lease length in seconds; share of linked items one delta may delete
// before the mass-delete brake stops the mailbox (text, 0-1); largest notification accepted.
param leaseSeconds = 120
param massDeleteRatio = '0.5'
param parkedMaxAttempts = 10
param fieldSettingsTtlSeconds = 300
param claimCheckSeconds = 300
param graphMailboxBudget = 10000
param graphBudgetWindowSeconds = 600
param graphBudgetShare = '0.95'
param graphTimeoutSeconds = 60
param dataverseTimeoutSeconds = 120
param maxNotificationBytes = 1000000

// Scale and cost: most instances, memory per instance (512, 2048 or 4096 MB), log retention.
param maximumInstanceCount = 40
param instanceMemoryMB = 2048
param logRetentionDays = 30

// Network: storage and Key Vault refuse public network access and the app reaches them through
// private endpoints in its own VNet (recommended). false keeps their public endpoints (still
// Entra-only, no keys), e.g. to run `crmsync mailbox ...` from a workstation.
param privateNetworking = true
param vnetAddressPrefix = '10.40.0.0/16'
param appSubnetPrefix = '10.40.0.0/24'
param endpointSubnetPrefix = '10.40.1.0/24'

// Admin API: the Entra app registration whose app role crmsync.Admin a caller of /api/admin/*
// must hold ('' = the crmsync app registration itself; README "Deploy", step 5).
param adminApiClientId = ''

// Alert thresholds: parked items per hour, and the change-to-CRM latency p95 in milliseconds.
param parkedItemsPerHour = 10
param changeToCrmP95Ms = 60000
