// Key Vault for the Entra app's certificate (CRMSYNC_CREDENTIAL_KIND=certificate only; the
// federated credential needs no secret at all). Access is Azure RBAC, never access policies;
// soft delete and purge protection keep a deleted certificate recoverable. With private networking
// (the default) the vault refuses public network access and is reached by a private endpoint.
// Docs: learn.microsoft.com/azure/key-vault/general/rbac-guide

@description('Key Vault name (3-24 characters).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Log Analytics workspace that receives the Key Vault audit log.')
param workspaceId string

@description('Refuse public network access: the app resolves the certificate through a private endpoint (network.bicep).')
param privateNetworking bool

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: checkov cannot evaluate the privateNetworking condition; with the default (true) the firewall denies and public access is disabled (tests/deploy checks both branches)
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
    }
  }
}

resource vaultLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'vault-audit'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
