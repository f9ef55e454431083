"""The data contract (sheets, fields, code lists, mappings) as data, and its typed loader."""
from schemas.contract import (
    CodeList,
    Contract,
    ContractError,
    Field,
    Sheet,
    load_codelist,
    load_contract,
)

__all__ = ["CodeList", "Contract", "ContractError", "Field", "Sheet", "load_codelist", "load_contract"]
