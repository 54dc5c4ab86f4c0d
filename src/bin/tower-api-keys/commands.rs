//! Each command, over the library's [`KeyManager`].

use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use sea_orm_migration::MigratorTrait;
use serde_json::json;
use tower_api_keys::{
    AccountId, AllowedNetworks, ApiKeyId, ApiKeyValidator, KeyManager, ManagerError, Metadata,
    NewApiKey, PepperId, Scopes,
    audit::{Actor, AuditQuery, ChangeRecord},
    entity,
    migration::Migrator,
    store::{SeaOrmRepository, redact_url},
};
use uuid::Uuid;

use crate::{
    cli::{Cli, Command, CreateArgs, EventsCommand, PepperCommand},
    config::{self, PepperNeed},
    database,
    error::CliError,
    import,
    output::{self, Report},
};

/// Runs the command: loads the peppers and any input, connects (which
/// migrates), acts, and shuts the validator down so that nothing pending is
/// lost.
pub(crate) async fn run(cli: Cli) -> Result<Report, CliError> {
    let prefix = config::key_prefix()?;
    if let Command::ScanningPattern { format } = cli.command {
        return Ok(output::scanning_pattern(prefix.as_ref(), format));
    }
    let need = match &cli.command {
        Command::Create(_) | Command::Rotate { .. } | Command::Pepper(_) => PepperNeed::Configured,
        _ => PepperNeed::None,
    };
    let peppers = config::peppers(need)?;
    // Read and check the whole input before touching the store.
    let lines = match &cli.command {
        Command::Import { file } => import::read(file)?,
        _ => Vec::new(),
    };
    database::check_url(&cli.database_url)?;
    let shown_url = redact_url(&cli.database_url);
    let repo = match SeaOrmRepository::builder(&cli.database_url)
        .with_pool_mode(cli.database_pool_mode)
        .connect()
        .await
    {
        Ok(repo) => repo,
        Err(err) => return Err(database::connect_error(err, &cli.database_url).await),
    };
    tracing::debug!(database = %shown_url, "key store connected and migrated");
    // A one-shot process has no cache worth keeping fresh: no change feed.
    let mut builder = ApiKeyValidator::builder(repo.clone(), peppers).with_change_feed(false);
    if let Some(prefix) = prefix {
        builder = builder.with_key_prefix(prefix);
    }
    let validator = builder.build();
    let manager = KeyManager::new(validator.clone())
        .with_max_keys_per_account(cli.max_keys_per_account)
        .acting(ChangeRecord::by(Actor::cli()));
    let result = execute(cli.command, &repo, &manager, lines, &shown_url).await;
    validator.shutdown().await;
    let _ = repo.connection().close_by_ref().await;
    result
}

async fn execute(
    command: Command,
    repo: &SeaOrmRepository,
    manager: &KeyManager,
    lines: Vec<import::Line>,
    shown_url: &str,
) -> Result<Report, CliError> {
    match command {
        Command::Migrate => {
            let applied: Vec<String> = Migrator::get_applied_migrations(&repo.executor())
                .await
                .map_err(|err| CliError::unavailable(format!("key store error: {err}")))?
                .iter()
                .map(|migration| migration.name().to_owned())
                .collect();
            Ok(Report {
                text: format!(
                    "{shown_url}: migrations applied ({} in all)\n",
                    applied.len()
                ),
                json: json!({
                    "message": "migrations applied",
                    "database": shown_url,
                    "migrations": applied,
                }),
            })
        }
        Command::Create(args) => {
            let account = AccountId::new(args.account);
            let created = manager.create(account, new_key(args)?).await?;
            Ok(output::created(&created))
        }
        Command::List { account } => {
            let keys = manager.list(AccountId::new(account)).await?;
            Ok(output::keys(account, &keys))
        }
        Command::Show { key_id } => {
            let account = owner_of(repo, key_id).await?;
            let key = manager.get(account, ApiKeyId::new(key_id)).await?;
            Ok(output::key(&key))
        }
        Command::Revoke { key_id } => {
            let account = owner_of(repo, key_id).await?;
            manager.revoke(account, ApiKeyId::new(key_id)).await?;
            Ok(output::message(
                "API key revoked successfully",
                format!("API key {key_id} revoked\n"),
            ))
        }
        Command::Delete { key_id } => {
            let account = owner_of(repo, key_id).await?;
            manager.delete(account, ApiKeyId::new(key_id)).await?;
            Ok(output::message(
                "API key deleted successfully",
                format!("API key {key_id} deleted\n"),
            ))
        }
        Command::Rotate {
            key_id,
            grace_period_seconds,
        } => {
            let account = owner_of(repo, key_id).await?;
            let created = manager
                .rotate(
                    account,
                    ApiKeyId::new(key_id),
                    Duration::from_secs(grace_period_seconds),
                )
                .await?;
            Ok(output::created(&created))
        }
        Command::Import { .. } => import_lines(repo, manager, lines).await,
        Command::Events(EventsCommand::Failed { limit }) => {
            Ok(output::failed_events(&manager.failed_events(limit).await?))
        }
        Command::Events(EventsCommand::Retry { event_id, all: _ }) => {
            let count = manager.retry_failed_events(event_id.as_deref()).await?;
            if count == 0 && event_id.is_some() {
                return Err(CliError::not_found("no failed event with that id"));
            }
            Ok(output::retried(count))
        }
        Command::Audit {
            account,
            key,
            limit,
            before,
        } => {
            let query = AuditQuery {
                account_id: account,
                key_id: key,
                before,
                limit,
            };
            Ok(output::audit(&manager.audit_page(query).await?))
        }
        Command::Pepper(PepperCommand::Status) => {
            let status = manager.pepper_status().await?;
            Ok(output::pepper_status(&status))
        }
        // Answered in `run` before connecting; the same answer here.
        Command::ScanningPattern { format } => Ok(output::scanning_pattern(
            config::key_prefix()?.as_ref(),
            format,
        )),
        Command::Pepper(PepperCommand::Retire { pepper_id }) => {
            let id: PepperId = pepper_id
                .parse()
                .map_err(|err| CliError::usage(format!("invalid pepper id: {err}")))?;
            // An id neither configured nor named by a key is a typo: retiring
            // it would revoke nothing and say so as if it had worked.
            let known = manager
                .pepper_status()
                .await?
                .iter()
                .any(|status| status.pepper_id.as_ref() == Some(&id));
            if !known {
                return Err(CliError::not_found(format!(
                    "no pepper {id}: it is not configured ({}, {}, {}) and no key that \
                     can still validate names it; `pepper status` lists the pepper ids",
                    config::PEPPER_VAR,
                    config::PREVIOUS_PEPPERS_VAR,
                    config::PEPPER_FILE
                )));
            }
            let revoked = manager.retire_pepper(&id).await?;
            Ok(Report {
                text: format!("pepper {id} retired: {revoked} keys revoked\n"),
                json: json!({ "pepper_id": id, "revoked": revoked }),
            })
        }
    }
}

/// The key `create` asks for.
fn new_key(args: CreateArgs) -> Result<NewApiKey, CliError> {
    let mut request = NewApiKey::new(args.title);
    if let Some(description) = args.description {
        request = request.with_description(description);
    }
    if let Some(days) = args.expires_in_days {
        request = request.with_expires_in_days(days);
    }
    if !args.scopes.is_empty() {
        let scopes = Scopes::new(&args.scopes)
            .map_err(|err| CliError::usage(format!("invalid --scope: {err}")))?;
        request = request.with_scopes(scopes);
    }
    if let Some(metadata) = args.metadata {
        let value = serde_json::from_str(&metadata).map_err(|_| {
            CliError::usage("invalid --metadata: must be a JSON object (not valid JSON)")
        })?;
        let metadata = Metadata::from_value(value)
            .map_err(|err| CliError::usage(format!("invalid --metadata: {err}")))?;
        request = request.with_metadata(metadata);
    }
    if let Some(limit) = args.rate_limit {
        request = request.with_rate_limit(limit);
    }
    if !args.allow_cidrs.is_empty() {
        let networks = AllowedNetworks::new(&args.allow_cidrs)
            .map_err(|err| CliError::usage(format!("invalid --allow-cidr: {err}")))?;
        request = request.with_allowed_cidrs(networks);
    }
    Ok(request)
}

/// The account that owns `key_id`, whichever it is: the operator's commands
/// are not scoped to an account, the manager's methods are.
async fn owner_of(repo: &SeaOrmRepository, key_id: Uuid) -> Result<AccountId, CliError> {
    let account: Option<Uuid> = entity::Entity::find()
        .select_only()
        .column(entity::Column::AccountId)
        .filter(entity::Column::KeyId.eq(key_id))
        .into_tuple()
        .one(&repo.executor())
        .await
        .map_err(|err| CliError::unavailable(format!("key store error: {err}")))?;
    account
        .map(AccountId::new)
        .ok_or_else(|| ManagerError::NotFound.into())
}

/// Writes the checked lines in one transaction, or explains by line why not.
async fn import_lines(
    repo: &SeaOrmRepository,
    manager: &KeyManager,
    lines: Vec<import::Line>,
) -> Result<Report, CliError> {
    let count = if lines.is_empty() {
        0
    } else {
        let records = lines.iter().map(|line| line.record.clone()).collect();
        match manager.import(records).await {
            Ok(count) => count,
            Err(ManagerError::Invalid(errors)) => {
                return Err(import::invalid_lines(&lines, &errors));
            }
            Err(ManagerError::Store(tower_api_keys::store::StoreError::Conflict)) => {
                return Err(import::conflicts(repo, &lines).await);
            }
            Err(err) => return Err(err.into()),
        }
    };
    Ok(Report {
        text: format!("imported {count} API keys\n"),
        json: json!({ "imported": count }),
    })
}
