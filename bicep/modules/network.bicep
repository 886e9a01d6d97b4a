// Private networking (main.bicep's privateNetworking, on by default): storage and Key Vault refuse
// public network access and are reached only through private endpoints in this VNet, which the
// function app joins by VNet integration. The app's subnet is delegated to Microsoft.App/environments
// (what Flex Consumption requires); the endpoints live in their own subnet; each service's
// privatelink DNS zone is linked to the VNet, so the usual host names resolve to private addresses.
// Docs: learn.microsoft.com/azure/azure-functions/flex-consumption-plan#virtual-network-integration,
//       learn.microsoft.com/azure/private-link/private-endpoint-dns

@description('Name prefix of the network resources.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Address space of the VNet.')
param addressPrefix string

@description('Subnet the function app integrates with (delegated to Microsoft.App/environments; /27 or larger).')
param appSubnetPrefix string

@description('Subnet of the private endpoints.')
param endpointSubnetPrefix string

@description('Storage account reached through blob, queue and table private endpoints.')
param storageAccountName string

@description('Key Vault reached through a private endpoint; empty when there is none.')
param keyVaultName string

var storageServices = [
  'blob'
  'queue'
  'table'
]
// privatelink.vaultcore.azure.net in the public cloud, the national clouds' equivalent elsewhere.
var vaultZone = 'privatelink${replace(environment().suffixes.keyvaultDns, 'vault.', 'vaultcore.')}'

// No inbound rules of our own: the platform defaults (VNet and load balancer in, deny the rest).
resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${name}-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: '${name}-vnet'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'endpoints'
        properties: {
          addressPrefix: endpointSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = if (!empty(keyVaultName)) {
  name: keyVaultName
}

resource storageZones 'Microsoft.Network/privateDnsZones@2024-06-01' = [
  for service in storageServices: {
    name: 'privatelink.${service}.${environment().suffixes.storage}'
    location: 'global'
    tags: tags
  }
]

resource storageZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (service, i) in storageServices: {
    parent: storageZones[i]
    name: '${name}-vnet'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnet.id
      }
    }
  }
]

resource storageEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [
  for service in storageServices: {
    name: '${name}-${service}-pe'
    location: location
    tags: tags
    properties: {
      subnet: {
        id: '${vnet.id}/subnets/endpoints'
      }
      privateLinkServiceConnections: [
        {
          name: service
          properties: {
            privateLinkServiceId: storage.id
            groupIds: [
              service
            ]
          }
        }
      ]
    }
  }
]

resource storageEndpointDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [
  for (service, i) in storageServices: {
    parent: storageEndpoints[i]
    name: 'default'
    properties: {
      privateDnsZoneConfigs: [
        {
          name: service
          properties: {
            privateDnsZoneId: storageZones[i].id
          }
        }
      ]
    }
  }
]

resource vaultZoneResource 'Microsoft.Network/privateDnsZones@2024-06-01' = if (!empty(keyVaultName)) {
  name: vaultZone
  location: 'global'
  tags: tags
}

resource vaultZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = if (!empty(keyVaultName)) {
  parent: vaultZoneResource
  name: '${name}-vnet'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource vaultEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = if (!empty(keyVaultName)) {
  name: '${name}-vault-pe'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: '${vnet.id}/subnets/endpoints'
    }
    privateLinkServiceConnections: [
      {
        name: 'vault'
        properties: {
          privateLinkServiceId: vault.id
          groupIds: [
            'vault'
          ]
        }
      }
    ]
  }
}

resource vaultEndpointDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = if (!empty(keyVaultName)) {
  parent: vaultEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'vault'
        properties: {
          privateDnsZoneId: vaultZoneResource.id
        }
      }
    ]
  }
}

output appSubnetId string = '${vnet.id}/subnets/app'
output vnetId string = vnet.id
