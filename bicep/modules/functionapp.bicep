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

@description('Largest request body the host reads, in bytes (the webhooks\' payload cap; the host\'s default is 100 MB).')
param maxRequestBodyBytes int

@description('Every crmsync setting shared/config.py reads, as name -> value (see main.bicep).')
param crmsyncSettings object

@description('Subnet the app integrates with (network.bicep); empty without private networking.')
param appSubnetId string

@description('Entra tenant that issues the admin API\'s tokens.')
param tenantId string

@description('Client id of the Entra app registration whose tokens the admin API accepts (audience api://<id>).')
param adminApiClientId string

@description('Routes App Service authentication leaves anonymous: Graph\'s webhooks (clientState) and the health probe.')
param anonymousPaths array

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
  {
    // The host buffers a whole request body before the Python worker sees it; cap it at the
    // webhooks' limit (learn.microsoft.com/azure/azure-functions/functions-app-settings).
    name: 'FUNCTIONS_REQUEST_BODY_SIZE_LIMIT'
    value: string(maxRequestBodyBytes)
  }
]

var crmsyncSettingList = [
  for setting in items(crmsyncSettings): {
    name: setting.key
    value: setting.value
  }
]

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Microsoft Graph must reach the notification and lifecycle webhooks from the internet; they are protected by clientState, the admin routes by Entra authentication (authsettingsV2) and function keys
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
    // VNet integration: storage and Key Vault are reached through their private endpoints.
    virtualNetworkSubnetId: empty(appSubnetId) ? null : appSubnetId
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

// App Service authentication (Easy Auth) in front of every route: a caller needs an Entra token
// for the admin API's app registration, which Entra issues only to principals assigned its app role
// crmsync.Admin (the enterprise application has "assignment required"; README "Deploy", step 5).
// Graph cannot present a token, so the two webhooks (clientState) and the health probe are left
// anonymous. Everything else needs a sign-in: a browser without one (the status page) is redirected
// to Entra's login page and comes back with App Service's session cookie; an API client presents
// its bearer token as before. No client secret: the sign-in uses the ID token
// (implicit grant) and the token store stays off, so App Service keeps no token. The function keys
// of the admin routes stay required on top (they are also what a cross-site request cannot know).
// Docs: learn.microsoft.com/azure/app-service/configure-authentication-api-version#authsettingsv2,
// learn.microsoft.com/azure/app-service/overview-authentication-authorization (unauthenticated
// requests), learn.microsoft.com/entra/identity-platform/howto-add-app-roles-in-apps
resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: checkov applies its Microsoft.Web/sites checks to this authsettingsV2 child resource; the site's own settings are on `app` above
  // checkov:skip=CKV_AZURE_63: checkov applies its Microsoft.Web/sites checks to this authsettingsV2 child resource; the site's own settings are on `app` above
  // checkov:skip=CKV_AZURE_65: checkov applies its Microsoft.Web/sites checks to this authsettingsV2 child resource; the site's own settings are on `app` above
  // checkov:skip=CKV_AZURE_66: checkov applies its Microsoft.Web/sites checks to this authsettingsV2 child resource; the site's own settings are on `app` above
  // checkov:skip=CKV_AZURE_80: checkov applies its Microsoft.Web/sites checks to this authsettingsV2 child resource; the site's own settings are on `app` above
  // checkov:skip=CKV_AZURE_88: checkov applies its Microsoft.Web/sites checks to this authsettingsV2 child resource; the site's own settings are on `app` above
  // checkov:skip=CKV_AZURE_222: checkov applies its Microsoft.Web/sites checks to this authsettingsV2 child resource; the site's own settings are on `app` above
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: anonymousPaths
    }
    httpSettings: {
      requireHttps: true
      forwardProxy: {
        convention: 'NoProxy'
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
          clientId: adminApiClientId
        }
        validation: {
          // v2 access tokens carry the client id as audience, v1 tokens the application id URI.
          allowedAudiences: [
            adminApiClientId
            'api://${adminApiClientId}'
          ]
        }
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
