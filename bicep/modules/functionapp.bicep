// The function app on the Flex Consumption plan (Linux, Python 3.11), running as the
// user-assigned identity. Flex takes the runtime from functionAppConfig and rejects the old
// FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION / WEBSITE_RUN_FROM_PACKAGE settings.
// Docs: learn.microsoft.com/azure/azure-functions/flex-consumption-how-to,
//       learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations

@description('Function app name (also its default host name).')
param name string

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

@description('Storage account the host and crmsync use (identity-based, no keys).')
param storageAccountName string

@description('URL of the blob container Flex Consumption deploys the package from.')
param deploymentContainerUrl string

@description('Application Insights connection string (holds no secret with local auth off).')
param appInsightsConnectionString string

@description('Most instances the app scales out to.')
param maximumInstanceCount int

@description('Memory per instance in MB.')
param instanceMemoryMB int

@description('Every crmsync setting shared/config.py reads, as name -> value (see main.bicep).')
param crmsyncSettings object

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy exists only in some regions; a failed deployment in the others is worse than regional availability for a sync that resumes from its delta links
  name: '${name}-plan'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

// Host settings the Functions runtime itself reads (not shared/config.py): identity-based host
// storage and Entra-authenticated telemetry.
var hostSettings = [
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storageAccountName
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
]

var crmsyncSettingList = [
  for setting in items(crmsyncSettings): {
    name: setting.key
    value: setting.value
  }
]

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Microsoft Graph must reach the notification and lifecycle webhooks from the internet; they are protected by clientState, the admin routes by function keys
  // checkov:skip=CKV_AZURE_17: Graph change notifications present no client certificate, so requiring one would reject every notification
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales instances per function on demand; always-ready instances are an optional cost, and lost notifications are recovered by delta queries
  // checkov:skip=CKV_AZURE_213: the Flex Consumption platform replaces unhealthy instances itself; /api/health is the liveness probe `crmsync deploy` checks
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: concat(hostSettings, crmsyncSettingList)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Deployments go through Entra-authenticated `az functionapp deployment`; no basic-auth publishing.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = app.name
output defaultHostName string = app.properties.defaultHostName
